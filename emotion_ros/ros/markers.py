"""RViz markers of incidents: a sphere at the position (level colour), a label above it.

Incidents with only a bearing get an arrow from the camera along the bearing.
Markers of incidents that disappeared are deleted by id (namespaces
``incidents``, ``incident_labels``).
"""

from __future__ import annotations

import math
from typing import Set, Tuple

from builtin_interfaces.msg import Duration
from emotion_ros_msgs.msg import IncidentArray
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from emotion_ros.ros.conversions import LEVEL_NAMES, STATE_NAMES
from emotion_ros.types import LEVEL_DISTRESS, LEVEL_EMERGENCY, LEVEL_WATCH

#: Level -> RGBA (WATCH yellow, DISTRESS orange, EMERGENCY red); rejected/resolved grey.
COLORS = {LEVEL_WATCH: (1.0, 0.85, 0.0, 0.9), LEVEL_DISTRESS: (1.0, 0.5, 0.0, 0.9),
          LEVEL_EMERGENCY: (1.0, 0.05, 0.05, 0.95)}
GREY = (0.6, 0.6, 0.6, 0.6)
ARROW_LENGTH_M = 3.0


def incident_markers(array: IncidentArray, previous: Set[int]
                     ) -> Tuple[MarkerArray, Set[int]]:
    """Markers for every incident with a position, and deletions for those gone."""
    out = MarkerArray()
    shown: Set[int] = set()
    for incident in array.incidents:
        if not incident.has_position:
            continue
        pos = incident.position
        closed = incident.rejected or incident.state == incident.STATE_RESOLVED
        color = ColorRGBA(**dict(zip('rgba', GREY if closed else
                                     COLORS.get(incident.level, GREY))))
        body = Marker(ns='incidents', id=int(incident.id), action=Marker.ADD, color=color,
                      lifetime=Duration(sec=0))
        label = Marker(ns='incident_labels', id=int(incident.id), action=Marker.ADD,
                       type=Marker.TEXT_VIEW_FACING, color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
        label.scale.z = 0.3
        label.text = (f'#{incident.id} {LEVEL_NAMES.get(incident.level, incident.level)} '
                      f'{STATE_NAMES.get(incident.state, "")}')
        if pos.has_point:
            body.header = pos.point.header
            body.type = Marker.SPHERE
            # Sphere diameter: two standard deviations, at least 0.4 m to stay visible.
            sigma = math.sqrt(max(pos.covariance[0], pos.covariance[4], pos.covariance[8], 0.0))
            body.scale.x = body.scale.y = body.scale.z = max(0.4, 2 * sigma)
            body.pose.position = pos.point.point
            body.pose.orientation.w = 1.0
            label.header = pos.point.header
            label.pose.position = Point(x=pos.point.point.x, y=pos.point.point.y,
                                        z=pos.point.point.z)
            # Above the sphere in a z-up fixed frame; "above" is -y in an optical frame.
            if pos.point.header.frame_id == pos.camera_frame:
                label.pose.position.y -= 0.5
            else:
                label.pose.position.z += 0.5
        else:
            body.header.frame_id = pos.camera_frame
            body.header.stamp = pos.point.header.stamp
            body.type = Marker.ARROW
            body.scale.x, body.scale.y, body.scale.z = 0.05, 0.12, 0.15
            direction = (math.sin(pos.azimuth) * math.cos(pos.elevation),
                         -math.sin(pos.elevation),
                         math.cos(pos.azimuth) * math.cos(pos.elevation))
            end = Point(x=ARROW_LENGTH_M * direction[0], y=ARROW_LENGTH_M * direction[1],
                        z=ARROW_LENGTH_M * direction[2])
            body.points = [Point(), end]
            body.pose.orientation.w = 1.0
            label.header = body.header
            label.pose.position = Point(x=end.x, y=end.y - 0.3, z=end.z)
        label.pose.orientation.w = 1.0
        out.markers += [body, label]
        shown.add(int(incident.id))
    for gone in sorted(previous - shown):
        for ns in ('incidents', 'incident_labels'):
            out.markers.append(Marker(ns=ns, id=gone, action=Marker.DELETE))
    return out, shown
