"""Tests of the training data: EMOTIC readers, JSONL, stats, synthetic set, samples, views."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from emotion_ros.llm.contract import BOX_COLOR_RGB, CATEGORIES, format_answer, parse_answer
from emotion_ros.errors import ConfigError, InputError
from emotion_ros.evaluation.metrics import mean_average_precision, vad_mae
from emotion_ros.llm.person_view import PAD_COLOR_RGB, render_person
from training.core.images import load_image_rgb
from training.emotic.dataset import detect_format, load_dataset, write_jsonl
from training.emotic.records import PersonRecord, categories_to_vector, label_matrix, vad_matrix
from training.emotic.samples import SampleSet, build_sample
from training.emotic.synthetic import expected_chance_map, make_synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAN = float('nan')


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-m', 'training', *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=120)


def _write_image(path, width, height, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


# --- writing EMOTIC's Annotations.mat the way the release lays it out ---------------------


def _struct(rows, fields):
    """Build a 1xN MATLAB struct array with the given field order."""
    array = np.zeros((1, len(rows)), dtype=[(f, 'O') for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            array[f][0, i] = row[f]
    return array


def _cell(strings):
    return np.array(list(strings), dtype=object).reshape(1, -1)


def _train_person(box, categories, vad, gender='Male', age='Adult'):
    cats = _struct([{'worker_id': 'AHI8X7NP92DAV', 'work_time': 511.0, 'batch_id': 2.0,
                     'categories': _cell(categories)}],
                   ['worker_id', 'work_time', 'batch_id', 'categories'])
    cont = _struct([{'worker_id': 'A3C8KN9HKGGZKG', 'valence': float(vad[0]),
                     'arousal': float(vad[1]), 'dominance': float(vad[2])}],
                   ['worker_id', 'valence', 'arousal', 'dominance'])
    return {'body_bbox': np.array([box], float), 'annotations_categories': cats,
            'annotations_continuous': cont, 'gender': gender, 'age': age}


def _test_person(box, annotators, combined, annotator_vad, combined_vad):
    cats = _struct([{'worker_id': f'W{i}', 'categories': _cell(c)}
                    for i, c in enumerate(annotators)], ['worker_id', 'categories'])
    cont = _struct([{'worker_id': f'W{i}', 'valence': float(v[0]), 'arousal': float(v[1]),
                     'dominance': float(v[2])} for i, v in enumerate(annotator_vad)],
                   ['worker_id', 'valence', 'arousal', 'dominance'])
    comb = _struct([{'valence': float(combined_vad[0]), 'arousal': float(combined_vad[1]),
                     'dominance': float(combined_vad[2])}], ['valence', 'arousal', 'dominance'])
    return {'body_bbox': np.array([box], float), 'annotations_categories': cats,
            'combined_categories': _cell(combined), 'annotations_continuous': cont,
            'combined_continuous': comb, 'gender': 'Female', 'age': 'Kid'}


TRAIN_PERSON_FIELDS = ['body_bbox', 'annotations_categories', 'annotations_continuous',
                       'gender', 'age']
TEST_PERSON_FIELDS = ['body_bbox', 'annotations_categories', 'combined_categories',
                      'annotations_continuous', 'combined_continuous', 'gender', 'age']


def _image_entry(filename, folder, size, persons, fields):
    return {'filename': filename, 'folder': folder,
            'image_size': _struct([{'n_col': float(size[0]), 'n_row': float(size[1])}],
                                  ['n_col', 'n_row']),
            'original_database': _struct([{'name': folder.split('/')[0], 'info': 0.0}],
                                         ['name', 'info']),
            'person': _struct(persons, fields)}


IMAGE_FIELDS = ['filename', 'folder', 'image_size', 'original_database', 'person']


@pytest.fixture
def emotic_mat(tmp_path):
    """Write an EMOTIC download: Annotations/Annotations.mat and emotic/<folder>/ images."""
    images = tmp_path / 'emotic'
    _write_image(str(images / 'mscoco/images/a.jpg'), 80, 60, 1)
    _write_image(str(images / 'emodb_small/images/b.jpg'), 50, 70, 2)
    _write_image(str(images / 'framesdb/images/c.jpg'), 64, 64, 3)
    train = _struct([
        _image_entry('a.jpg', 'mscoco/images', (80, 60), [
            _train_person([10, 5, 40, 55], ['Engagement', 'Happiness'], (7, 6, 8)),
            _train_person([-5, 0, 30, 70], ['Fear'], (2, 9, 3)),  # sticks out: clipped
        ], TRAIN_PERSON_FIELDS),
        _image_entry('b.jpg', 'emodb_small/images', (50, 70), [
            _train_person([5, 5, 45, 65], ['Sadness', 'Pain'], (NAN, NAN, NAN)),  # nan VAD
        ], TRAIN_PERSON_FIELDS),
        _image_entry('missing.jpg', 'mscoco/images', (80, 60), [
            _train_person([5, 5, 45, 50], ['Peace'], (8, 2, 6)),  # image not there
        ], TRAIN_PERSON_FIELDS),
        _image_entry('c.jpg', 'framesdb/images', (64, 64), [
            _train_person([100, 100, 150, 150], ['Peace'], (8, 2, 6)),  # outside image
            _train_person([1, 2, 60, 63], ['Suffering'], (1, 7, 2)),
        ], TRAIN_PERSON_FIELDS),
    ], IMAGE_FIELDS)
    val = _struct([
        _image_entry('c.jpg', 'framesdb/images', (64, 64), [
            _test_person([4, 4, 50, 60], [['Fear', 'Pain'], ['Fear'], ['Suffering', 'Fear']],
                         ['Fear'], [(2, 8, 3), (3, 9, 2), (1, 7, 4)], (2.0, 8.0, 3.0)),
        ], TEST_PERSON_FIELDS),
    ], IMAGE_FIELDS)
    os.makedirs(tmp_path / 'Annotations')
    scipy.io.savemat(str(tmp_path / 'Annotations' / 'Annotations.mat'),
                     {'train': train, 'val': val})
    return tmp_path


CSV_HEADER = ['Index', 'Folder', 'Filename', 'Image Size', 'BBox', 'Categorical_Labels',
              'Continuous_Labels', 'Gender', 'Age']


@pytest.fixture
def emotic_csv(tmp_path):
    """Write a preprocessed EMOTIC download: emotic_pre/{train,test}.csv and emotic/ images."""
    images = tmp_path / 'emotic'
    _write_image(str(images / 'mscoco/images/COCO_train2014_000000000001.jpg'), 80, 60, 1)
    _write_image(str(images / 'ade20k/images/sun_a.jpg'), 40, 40, 2)
    rows = [
        [0, 'mscoco/images', 'COCO_train2014_000000000001.jpg', [80, 60], [10, 5, 40, 55],
         ['Engagement', 'Happiness'], [7, 6, 8], 'Male', 'Adult'],
        [1, 'ade20k/images', 'sun_a.jpg', [40, 40], [0, 0, 40, 40], ['Peace'], [8, 2, 6],
         'Female', 'Kid'],
        [2, 'ade20k/images', 'sun_a.jpg', [40, 40], [1, 1, 20, 39], ['Joy'], [8, 2, 6],
         'Female', 'Adult'],  # not an EMOTIC category
        [3, 'ade20k/images', 'sun_a.jpg', [40, 40], [1, 1, 20, 39], ['Fear'],
         [NAN, NAN, NAN], 'Male', 'Adult'],  # written as [nan, nan, nan]
        [4, 'mscoco/images', 'gone.jpg', [80, 60], [1, 1, 20, 39], ['Fear'], [2, 8, 2],
         'Male', 'Adult'],  # missing image
    ]
    os.makedirs(tmp_path / 'emotic_pre')
    with open(tmp_path / 'emotic_pre' / 'train.csv', 'w', newline='') as handle:
        writer = csv.writer(handle, dialect='excel')
        writer.writerow(CSV_HEADER)
        for row in rows:
            writer.writerow(row)  # csv writes lists with str(), like the public script
        handle.write('5,mscoco/images,x.jpg,"[80, 60]","[1, 2,",[\'Fear\'],"[1, 2, 3]",M,A\n')
    with open(tmp_path / 'emotic_pre' / 'test.csv', 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerow(rows[0])
    return tmp_path


# --- readers ------------------------------------------------------------------------------


def test_mat_reader_reads_the_real_layout(emotic_mat):
    """Train persons come from the annotator labels, val from the combined ones."""
    assert detect_format(str(emotic_mat)) == 'emotic_mat'
    records, report = load_dataset(str(emotic_mat), 'train', max_skip_fraction=1.0)
    first = records[0]
    assert first.categories == ('Engagement', 'Happiness')
    assert first.vad == (7.0, 6.0, 8.0)
    assert first.box == (10.0, 5.0, 40.0, 55.0)
    assert first.image_size == (80, 60)
    assert first.image_path == str(emotic_mat / 'emotic/mscoco/images/a.jpg')
    assert first.meta['gender'] == 'Male' and first.meta['original_database'] == 'mscoco'
    assert first.split == 'train'
    clipped = records[1]
    assert clipped.categories == ('Fear',) and clipped.box == (0.0, 0.0, 30.0, 60.0)
    assert report.clipped == 1
    val, val_report = load_dataset(str(emotic_mat), 'val')
    assert len(val) == 1 and val_report.skipped == 0
    person = val[0]
    assert person.categories == ('Fear',)  # combined, not the union of annotators
    assert person.vad == (2.0, 8.0, 3.0)
    assert person.meta['labels'] == 'combined'
    assert person.meta['annotators']['categories'] == [['Fear', 'Pain'], ['Fear'],
                                                       ['Suffering', 'Fear']]
    assert person.split == 'val'


def test_mat_reader_counts_missing_images_outside_boxes_and_nan_vad(emotic_mat):
    """Bad persons are counted per reason; past the threshold the error names the counts."""
    records, report = load_dataset(str(emotic_mat), 'train', max_skip_fraction=1.0)
    assert report.total == 6
    assert report.counts == {'nan_vad': 1, 'missing_image': 1, 'box_outside_image': 1}
    assert [r.categories for r in records] == [('Engagement', 'Happiness'), ('Fear',),
                                               ('Suffering',)]
    assert 'missing.jpg' in report.examples['missing_image'][0]
    with pytest.raises(InputError) as error:
        load_dataset(str(emotic_mat), 'train')  # default: at most 5 % skipped
    message = str(error.value)
    for part in ('3 of 6 persons', 'missing_image 1', 'nan_vad 1', 'box_outside_image 1'):
        assert part in message
    # Without image checks the missing file is not noticed; the rest still is.
    _, unchecked = load_dataset(str(emotic_mat), 'train', 1.0, check_images=False)
    assert unchecked.counts == {'nan_vad': 1, 'box_outside_image': 1}
    # An emotions-only dataset keeps the person without VAD.
    emotions_only, _ = load_dataset(str(emotic_mat), 'train', 1.0, require_vad=False)
    assert any(math.isnan(r.vad[0]) for r in emotions_only)


def test_csv_reader_reads_the_public_preprocessed_layout(emotic_csv):
    """CSV rows with Python-literal cells load; nan, unknown names, bad cells are counted."""
    assert detect_format(str(emotic_csv)) == 'emotic_csv'
    records, report = load_dataset(str(emotic_csv), 'train', max_skip_fraction=1.0)
    assert report.total == 6
    assert report.counts == {'unknown_category': 1, 'nan_vad': 1, 'missing_image': 1,
                             'malformed_row': 1}
    assert [r.categories for r in records] == [('Engagement', 'Happiness'), ('Peace',)]
    assert records[0].image_path == str(
        emotic_csv / 'emotic/mscoco/images/COCO_train2014_000000000001.jpg')
    assert records[0].meta['gender'] == 'Male' and records[1].meta['age'] == 'Kid'
    assert "'Joy'" in report.examples['unknown_category'][0]
    assert 'train.csv line 4' in report.examples['unknown_category'][0]
    with pytest.raises(InputError, match='unknown_category 1'):
        load_dataset(str(emotic_csv), 'train', max_skip_fraction=0.5)
    # The CSV file itself and an explicit images root work too.
    direct, _ = load_dataset(str(emotic_csv / 'emotic_pre' / 'test.csv'), 'test',
                             images_root=str(emotic_csv / 'emotic'))
    assert direct[0].categories == ('Engagement', 'Happiness')


def test_csv_without_required_columns_is_rejected(tmp_path):
    """A CSV that is not the EMOTIC one fails naming the missing columns."""
    (tmp_path / 'emotic_pre').mkdir()
    (tmp_path / 'emotic_pre' / 'train.csv').write_text('Index,Folder,Filename\n0,a,b.jpg\n')
    with pytest.raises(InputError, match='BBox'):
        load_dataset(str(tmp_path), 'train')


def test_detect_format_and_its_errors(tmp_path, emotic_mat):
    """Each layout is recognised; an empty folder or a missing split gives a clear error."""
    with pytest.raises(InputError, match='does not exist'):
        detect_format(str(tmp_path / 'not_there'))
    empty = tmp_path / 'empty_dir'
    empty.mkdir()
    with pytest.raises(InputError, match='no dataset found.*Annotations.mat'):
        detect_format(str(empty))
    (empty / 'val.jsonl').write_text('')
    assert detect_format(str(empty)) == 'jsonl'
    with pytest.raises(InputError, match='no train.jsonl'):
        load_dataset(str(empty), 'train')
    with pytest.raises(InputError, match="no 'test' variable"):
        load_dataset(str(emotic_mat), 'test')
    with pytest.raises(ConfigError, match='split'):
        load_dataset(str(emotic_mat), 'training')


def test_jsonl_round_trip_and_single_file(tmp_path, emotic_csv):
    """Records written as JSONL read back equal; a single file selects lines by split."""
    records, _ = load_dataset(str(emotic_csv), 'train', max_skip_fraction=1.0)
    out = tmp_path / 'own'
    assert write_jsonl(records, str(out / 'train.jsonl')) == 2
    lines = [json.loads(x) for x in (out / 'train.jsonl').read_text().splitlines()]
    assert set(lines[0]) == {'image', 'box', 'categories', 'vad', 'image_size', 'split', 'meta'}
    assert not os.path.isabs(lines[0]['image'])
    again, report = load_dataset(str(out), 'train')
    assert report.skipped == 0
    for a, b in zip(records, again):
        assert (a.image_path, a.box, a.categories, a.vad, a.image_size) == \
               (b.image_path, b.box, b.categories, b.vad, b.image_size)
    single = tmp_path / 'all.jsonl'
    image = str(emotic_csv / 'emotic/ade20k/images/sun_a.jpg')
    single.write_text('\n'.join(json.dumps(x) for x in [
        {'image': image, 'box': [1, 1, 20, 30], 'categories': ['pain'], 'vad': [2, 7, 2],
         'split': 'test', 'robot': 'husky-2'},
        {'image': image, 'box': [1, 1, 20, 30], 'categories': ['Fear'], 'vad': [2, 7, 2],
         'split': 'train'},
    ]) + '\n{"image": "x.jpg", "box": [1, 2, 3\n')  # a truncated line
    test_records, test_report = load_dataset(str(single), 'test', max_skip_fraction=0.5)
    assert test_records[0].categories == ('Pain',)  # names match case-insensitively
    assert test_records[0].image_size == (40, 40)  # read from the image header
    assert test_records[0].meta['robot'] == 'husky-2'
    # The truncated line has no readable split, so every split's load counts it.
    assert test_report.total == 2 and test_report.counts == {'malformed_row': 1}
    assert 'invalid JSON' in test_report.examples['malformed_row'][0]


def test_exif_rotation_size_mismatch_and_unreadable_images(tmp_path):
    """EXIF-rotated photos keep the annotated frame; wrong sizes and broken files are counted."""
    rotated = tmp_path / 'rot.jpg'
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60x40, shown rotated as 40x60
    Image.new('RGB', (60, 40), (0, 200, 0)).save(rotated, exif=exif.tobytes())
    _write_image(str(tmp_path / 'plain.png'), 30, 20)
    (tmp_path / 'broken.jpg').write_bytes(b'not a jpeg at all')
    people = [
        {'image': 'rot.jpg', 'box': [0, 0, 40, 60], 'categories': ['Fear'], 'vad': [2, 8, 2],
         'image_size': [40, 60]},
        {'image': 'plain.png', 'box': [0, 0, 10, 10], 'categories': ['Fear'], 'vad': [2, 8, 2],
         'image_size': [300, 200]},
        {'image': 'plain.png', 'box': [0, 0, 10, 10], 'categories': ['Fear'], 'vad': [2, 8, 2],
         'image_size': [20, 30]},  # height listed first: accepted
        {'image': 'broken.jpg', 'box': [0, 0, 10, 10], 'categories': ['Fear'],
         'vad': [2, 8, 2]},
    ]
    (tmp_path / 'train.jsonl').write_text('\n'.join(json.dumps(p) for p in people))
    records, report = load_dataset(str(tmp_path), 'train', max_skip_fraction=1.0)
    assert report.counts == {'image_size_mismatch': 1, 'unreadable_image': 1}
    assert records[0].meta['exif_transpose'] is True
    assert load_image_rgb(records[0].image_path, records[0].image_size,
                          records[0].meta['exif_transpose']).shape == (60, 40, 3)
    assert records[1].image_size == (30, 20) and records[1].meta['size_order_swapped']
    with pytest.raises(InputError, match='cannot read image'):
        load_image_rgb(str(tmp_path / 'broken.jpg'))
    with pytest.raises(InputError, match='annotation expects'):
        load_image_rgb(str(tmp_path / 'plain.png'), (31, 20))


def test_categories_to_vector_and_matrices():
    """Vectors follow the contract order and reject unknown names."""
    vector = categories_to_vector(['Yearning', 'Affection'])
    assert vector.shape == (26,) and vector.dtype == np.float32
    assert vector[0] == 1 and vector[25] == 1 and vector.sum() == 2
    with pytest.raises(InputError, match='Joy'):
        categories_to_vector(['Joy'])
    record = PersonRecord('/x.jpg', (0, 0, 1, 1), ('Fear',), (1.0, 2.0, 3.0), 'val', (2, 2))
    assert label_matrix([record])[0, CATEGORIES.index('Fear')] == 1
    assert vad_matrix([record]).tolist() == [[1.0, 2.0, 3.0]]
    assert hash(record) == hash(PersonRecord('/x.jpg', (0, 0, 1, 1), ('Fear',),
                                             (1.0, 2.0, 3.0), 'val', (2, 2), {'a': 1}))


# --- stats command ------------------------------------------------------------------------


def test_stats_command_json_and_table(emotic_mat):
    """``python -m training stats --json`` reports per split; exit 1 past the threshold."""
    result = _run_cli('stats', str(emotic_mat), '--json', '--no-progress')
    assert result.returncode == 1, result.stderr  # train skips 50 % of its persons
    assert 'train' in result.stderr and 'skipped' in result.stderr
    stats = json.loads(result.stdout)
    assert stats['format'] == 'emotic_mat'
    train, val = stats['splits']['train'], stats['splits']['val']
    assert (train['images'], train['persons'], train['persons_read']) == (2, 3, 6)
    assert train['skipped'] == {'box_outside_image': 1, 'missing_image': 1, 'nan_vad': 1}
    assert train['persons_per_category']['Fear'] == 1
    assert train['persons_per_category']['Engagement'] == 1
    assert train['vad_mean']['Valence'] == pytest.approx((7 + 2 + 1) / 3)
    assert train['boxes_clipped'] == 1 and not train['within_threshold']
    assert val['persons'] == 1 and val['within_threshold']
    table = _run_cli('stats', str(emotic_mat), '--split', 'val', '--no-progress')
    assert table.returncode == 0, table.stderr
    assert 'persons per category' in table.stdout and 'Fear' in table.stdout
    missing = _run_cli('stats', str(emotic_mat / 'nope'))
    assert missing.returncode == 2 and 'does not exist' in missing.stderr


# --- synthetic dataset --------------------------------------------------------------------


def test_make_synthetic_is_deterministic_and_loads(tmp_path):
    """Same seed, same bytes; val does not depend on the train size; it loads cleanly."""
    a = make_synthetic(str(tmp_path / 'a'), 12, 6, 4, seed=3, image_size=(96, 72))
    b = make_synthetic(str(tmp_path / 'b'), 12, 6, 4, seed=3, image_size=(96, 72))
    c = make_synthetic(str(tmp_path / 'c'), 20, 6, 4, seed=4, image_size=(96, 72))
    d = make_synthetic(str(tmp_path / 'd'), 30, 6, 0, seed=3, image_size=(96, 72))
    for split in ('train', 'val', 'test'):
        assert open(a.csv_paths[split]).read() == open(b.csv_paths[split]).read()
    image_a = os.path.join(a.images_root, 'synthetic/images/val_00003.jpg')
    image_b = os.path.join(b.images_root, 'synthetic/images/val_00003.jpg')
    assert open(image_a, 'rb').read() == open(image_b, 'rb').read()
    assert open(a.csv_paths['val']).read() == open(d.csv_paths['val']).read()
    assert open(a.csv_paths['val']).read() != open(c.csv_paths['val']).read()
    assert 'test' not in d.csv_paths
    records, report = load_dataset(a.root, 'train')
    assert len(records) == 12 and report.skipped == 0 and report.clipped == 0
    assert all(1 <= v <= 10 for r in records for v in r.vad)
    with pytest.raises(ConfigError, match='overwrite'):
        make_synthetic(a.root, 1, 1, 1)
    assert make_synthetic(a.root, 2, 1, 1, overwrite=True).persons['train'] == 2
    with pytest.raises(ConfigError, match='n_train'):
        make_synthetic(str(tmp_path / 'e'), -1, 1, 1)


def test_synthetic_labels_are_learnable(tmp_path):
    """A linear model on the person crop reaches a val mAP far above chance and beats VAD mean."""
    info = make_synthetic(str(tmp_path / 'syn'), 500, 200, 0, seed=0, persons_per_image=2)
    features, labels, vads = {}, {}, {}
    for split in ('train', 'val'):
        records, _ = load_dataset(info.root, split)
        rows = []
        for sample in SampleSet(records, view='crop', prompt_id='emotic_vad_v1', square=False):
            small = Image.fromarray(sample.image).resize((12, 20), Image.BILINEAR)
            rows.append(np.asarray(small, np.float64).ravel() / 255.0)
        features[split] = np.hstack([np.array(rows), np.ones((len(rows), 1))])
        labels[split], vads[split] = label_matrix(records), vad_matrix(records)
    x = features['train']
    ridge = np.linalg.solve(x.T @ x + 1.0 * np.eye(x.shape[1]), x.T)
    scores = features['val'] @ (ridge @ labels['train'])
    value, _ = mean_average_precision(labels['val'], scores)
    chance = expected_chance_map()
    assert value > 0.7 and value > 4 * chance, (value, chance)
    predicted_vad = features['val'] @ (ridge @ vads['train'])
    baseline = vad_mae(vads['val'], np.broadcast_to(vads['train'].mean(0), vads['val'].shape))
    learned = vad_mae(vads['val'], predicted_vad)
    assert learned['mean'] < 0.5 * baseline['mean'], (learned, baseline)


def test_make_synthetic_command(tmp_path):
    """``python -m training make-synthetic`` writes a dataset that ``stats`` accepts."""
    out = tmp_path / 'syn'
    result = _run_cli('make-synthetic', str(out), '--train', '4', '--val', '2', '--test', '2',
                      '--image-size', '64x48', '--no-progress')
    assert result.returncode == 0, result.stderr
    assert (out / 'emotic_pre' / 'val.csv').exists() and (out / 'synthetic.json').exists()
    stats = json.loads(_run_cli('stats', str(out), '--json', '--no-progress').stdout)
    assert {s: v['persons'] for s, v in stats['splits'].items()} == \
        {'train': 4, 'val': 2, 'test': 2}
    again = _run_cli('make-synthetic', str(out), '--train', '4', '--no-progress')
    assert again.returncode == 2 and '--overwrite' in again.stderr
    usage = _run_cli('--help')
    assert usage.returncode == 0 and 'make-synthetic' in usage.stdout


# --- person views and samples -------------------------------------------------------------


def test_render_person_box_and_crop_views():
    """'box' draws a red frame on a copy of the whole image; 'crop' cuts the box plus margin."""
    image = np.full((60, 100, 3), 50, np.uint8)
    original = image.copy()
    boxed = render_person(image, (20, 10, 60, 50), 'box', square=False, line_width=2)
    assert np.array_equal(image, original)
    assert boxed.shape == image.shape
    assert tuple(boxed[10, 30]) == BOX_COLOR_RGB and tuple(boxed[30, 59]) == BOX_COLOR_RGB
    assert tuple(boxed[30, 40]) == (50, 50, 50) and tuple(boxed[5, 5]) == (50, 50, 50)
    squared = render_person(image, (20, 10, 60, 50), 'box')
    assert squared.shape == (100, 100, 3) and tuple(squared[0, 0]) == PAD_COLOR_RGB
    crop = render_person(image, (20, 10, 60, 50), 'crop', margin=0.25, square=False)
    assert crop.shape == (60, 60, 3)  # 40 + 2 * 10 each way, clipped to the image height
    edge = render_person(image, (-30, -10, 10, 20), 'crop', margin=0.0, square=False)
    assert edge.shape == (20, 10, 3)
    with pytest.raises(InputError, match='outside'):
        render_person(image, (200, 0, 300, 10), 'box')
    with pytest.raises(InputError, match='empty'):
        render_person(image, (20, 10, 20, 50), 'box')
    with pytest.raises(InputError, match='uint8'):
        render_person(image.astype(np.float32), (20, 10, 60, 50), 'box')
    with pytest.raises(ConfigError, match='view'):
        render_person(image, (20, 10, 60, 50), 'face')


def test_build_sample_answers_follow_the_contract(tmp_path):
    """Answers are the contract's text, parse back to the labels; the ablation drops VAD."""
    info = make_synthetic(str(tmp_path / 'syn'), 3, 0, 0, seed=1, image_size=(64, 48))
    records, _ = load_dataset(info.root, 'train')
    record = records[0]
    sample = build_sample(record, 'box', 'emotic_vad_v1')
    assert sample.answer == format_answer(record.categories, record.vad)
    parsed = parse_answer(sample.answer)
    assert tuple(parsed.categories) == record.categories and parsed.vad == record.vad
    assert sample.image.shape == (64, 64, 3) and sample.labels_26.sum() == len(record.categories)
    assert 'red box' in sample.prompt
    emotions_only = build_sample(record, 'crop', 'emotic_emotions_v1')
    assert 'Valence' not in emotions_only.answer
    assert emotions_only.answer == format_answer(record.categories)
    with pytest.raises(ConfigError, match='contradicts'):
        build_sample(record, 'box', 'emotic_vad_v1', with_vad=False)
    with pytest.raises(ConfigError, match='no training target'):
        build_sample(record, 'box', 'explain_v1')
    no_vad = PersonRecord(record.image_path, record.box, record.categories, (NAN, NAN, NAN),
                          'train', record.image_size)
    with pytest.raises(InputError, match='no VAD'):
        build_sample(no_vad, 'box', 'emotic_vad_v1')
    assert build_sample(no_vad, 'box', 'emotic_emotions_v1').answer.startswith('Emotions:')
    samples = SampleSet(records, view='crop', prompt_id='emotic_emotions_v1')
    assert len(samples) == 3 and [s.answer for s in samples][2] == \
        format_answer(records[2].categories)


def test_data_modules_import_without_ros_or_heavy_libraries():
    """The data modules import neither rclpy nor torch, transformers, scipy or PIL at load."""
    code = ('import sys, training, training.emotic.records, training.emotic.dataset, '
            'training.emotic.readers, training.emotic.synthetic, training.emotic.samples, '
            'training.core.images, training.av.data, training.commands, '
            'emotion_ros.llm.person_view, emotion_ros.evaluation.metrics; '
            'bad = [m for m in ("rclpy", "torch", "transformers", "scipy", "PIL") '
            'if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
