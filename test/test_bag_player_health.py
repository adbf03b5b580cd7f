"""bag_player does not fail silently: a bag that breaks part-way ends playing with exit code 1
and a message naming the bag, after publishing what could be read."""

from __future__ import annotations

import numpy as np

from conftest import wait_until
from emotion_ros.evaluation import bags
from emotion_ros.evaluation.bags import BagWriter, project_typestore


def test_bag_corrupt_part_way_exits_1_naming_it(tmp_path, start_node, ros_node):
    """Pages of the sqlite file overwritten at 70 %: the first messages are published, then
    the read error is logged with the bag's path and the node exits with code 1 (not 0)."""
    from sensor_msgs.msg import Image
    store = project_typestore()
    path = tmp_path / 'bag'
    with BagWriter(path, 'sqlite3', store) as writer:
        writer.add_topic('/cam', bags.IMAGE_TYPE)
        for i in range(40):
            t = 2000 + i * 0.05
            writer.write('/cam', int(t * 1e9),
                         bags.image_message(store, np.full((120, 160, 3), i, np.uint8), t))
    db = path / 'bag.db3'
    size = db.stat().st_size
    with open(db, 'r+b') as f:
        f.seek(int(size * 0.7) // 4096 * 4096)
        f.write(b'\xff' * 4096 * 3)
    node = ros_node('corrupt_listener')
    got = []
    node.create_subscription(Image, '/cam', got.append, 100)
    player = start_node('bag_player', str(path), '--rate', '5', '--wait-for-subscribers', '1')
    assert wait_until(lambda: not player.alive(), 60, ros_node.spin), player.output()
    out = player.output()
    assert player.proc.returncode == 1, out
    assert 'playing failed after' in out and str(path) in out and 'malformed' in out
    wait_until(lambda: len(got) >= 5, 5, ros_node.spin)
    assert 5 <= len(got) < 40
