"""Image decoding/encoding between ROS message fields and RGB arrays."""

from array import array
import subprocess
import sys

import cv2
import numpy as np
import pytest

from emotion_ros.errors import InputError
from emotion_ros.perception.image_codec import (clip_box, crop, decode_compressed, decode_image,
                                                ENCODE_ENCODINGS, encode_image, encode_jpeg,
                                                RAW_ENCODINGS)
from emotion_ros.sample_media import load_sample


def _rand_rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _grey(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize('encoding', ENCODE_ENCODINGS)
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (7, 2), (48, 33)])
def test_round_trip_over_encodings_and_sizes(encoding, size):
    """encode_image -> decode_image gives the image back (grey encodings: its grey)."""
    rgb = _rand_rgb(*size, seed=size[0] * 100 + size[1])
    height, width, step, data = encode_image(rgb, encoding)
    assert (height, width) == size and len(data) == step * height
    out = decode_image(encoding, width, height, step, data)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.flags['C_CONTIGUOUS']
    if encoding.startswith('mono'):
        np.testing.assert_array_equal(out[:, :, 0], _grey(rgb))
        np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    else:
        np.testing.assert_array_equal(out, rgb)


def test_bgr_and_alpha_channels_are_reordered():
    """A pure red pixel reads as red from rgb8, bgr8, rgba8 and bgra8 byte orders."""
    layouts = {'rgb8': [255, 0, 0], 'bgr8': [0, 0, 255], 'rgba8': [255, 0, 0, 9],
               'bgra8': [0, 0, 255, 9], '8UC3': [0, 0, 255]}
    for encoding, pixel in layouts.items():
        out = decode_image(encoding, 1, 1, len(pixel), bytes(pixel))
        assert out.tolist() == [[[255, 0, 0]]], encoding


@pytest.mark.parametrize('encoding,bpp', [('rgb8', 3), ('bgr8', 3), ('mono8', 1),
                                          ('bgra8', 4), ('mono16', 2)])
def test_row_padding_is_dropped(encoding, bpp):
    """Rows with step > width*bpp decode to the same pixels as unpadded rows."""
    rgb = _rand_rgb(6, 5, seed=3)
    height, width, step, data = encode_image(rgb, encoding)
    pad = 7
    rows = np.frombuffer(data, np.uint8).reshape(height, step)
    junk = np.full((height, pad), 0xAB, np.uint8)
    padded = np.hstack([rows, junk]).tobytes()
    out = decode_image(encoding, width, height, step + pad, padded)
    np.testing.assert_array_equal(out, decode_image(encoding, width, height, step, data))


@pytest.mark.parametrize('container', [bytes, bytearray, memoryview,
                                       lambda b: array('B', b), list, np.frombuffer])
def test_data_containers(container):
    """bytes, bytearray, memoryview, array('B'), list and numpy all decode alike."""
    rgb = _rand_rgb(4, 3, seed=5)
    height, width, step, data = encode_image(rgb, 'bgr8')
    wrapped = container(data) if container is not np.frombuffer else np.frombuffer(data, np.uint8)
    np.testing.assert_array_equal(decode_image('bgr8', width, height, step, wrapped), rgb)


def test_sixteen_bit_keeps_high_byte_and_endianness():
    """mono16/rgb16 keep the high byte; is_bigendian swaps the byte order."""
    values = np.array([[0x0000, 0x01FF, 0x8000, 0xFFFF]], np.uint16)
    little = decode_image('mono16', 4, 1, 8, values.astype('<u2').tobytes())
    big = decode_image('mono16', 4, 1, 8, values.astype('>u2').tobytes(), is_bigendian=True)
    assert little[0, :, 0].tolist() == [0, 1, 128, 255]
    np.testing.assert_array_equal(little, big)
    rgb16 = np.array([[[0xFF00, 0x1000, 0x0100]]], '<u2')
    assert decode_image('rgb16', 1, 1, 6, rgb16.tobytes()).tolist() == [[[255, 16, 1]]]


@pytest.mark.parametrize('encoding', ['bayer_rggb8', 'bayer_bggr8', 'bayer_gbrg8',
                                      'bayer_grbg8'])
def test_bayer_patterns_demosaic_to_the_right_colour(encoding):
    """A mosaic of a uniform orange built in each ROS pattern decodes back to orange."""
    colour = {'r': 200, 'g': 90, 'b': 20}
    pattern = encoding.split('_')[1][:4]  # e.g. 'rggb': row 0 = r g, row 1 = g b
    mosaic = np.zeros((16, 16), np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            mosaic[dy::2, dx::2] = colour[pattern[2 * dy + dx]]
    out = decode_image(encoding, 16, 16, 16, mosaic.tobytes())
    centre = out[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(centre, [200, 90, 20], atol=3)


def test_yuv422_uyvy_and_yuyv():
    """Packed 4:2:2 decodes: mid grey stays grey, and UYVY/YUYV byte orders agree."""
    uyvy = bytes([128, 128, 128, 128] * 4)  # U Y V Y with U=V=128: neutral grey
    out = decode_image('yuv422', 8, 1, 16, uyvy)
    assert np.all(np.abs(out.astype(int) - 128) <= 2)
    # A saturated colour: Y=81, U=90, V=240 is red in BT.601.
    u_y_v_y = bytes([90, 81, 240, 81] * 2)
    y_u_y_v = bytes([81, 90, 81, 240] * 2)
    red_a = decode_image('yuv422', 4, 1, 8, u_y_v_y)
    red_b = decode_image('yuv422_yuy2', 4, 1, 8, y_u_y_v)
    np.testing.assert_array_equal(red_a, red_b)
    r, g, b = red_a[0, 0].astype(int)
    assert r > 200 and g < 40 and b < 40
    with pytest.raises(InputError) as err:
        decode_image('yuv422', 3, 1, 6, bytes(6))  # pixel pairs need an even width
    assert err.value.kind == 'image_size'


def test_unsupported_encoding_lists_supported_ones():
    """An unknown encoding raises image_encoding and names the supported encodings."""
    with pytest.raises(InputError) as err:
        decode_image('32FC1', 2, 2, 8, bytes(16))
    assert err.value.kind == 'image_encoding'
    assert '32FC1' in str(err.value) and all(e in str(err.value) for e in RAW_ENCODINGS[:6])


def test_size_mismatches_say_expected_and_got():
    """A short step or a wrong data length raise image_size with both numbers."""
    with pytest.raises(InputError) as err:
        decode_image('rgb8', 10, 2, 20, bytes(40))
    assert err.value.kind == 'image_size' and '20' in str(err.value) and '30' in str(err.value)
    with pytest.raises(InputError) as err:
        decode_image('rgb8', 10, 2, 30, bytes(59))
    assert err.value.kind == 'image_size'
    assert '60' in str(err.value) and '59' in str(err.value)
    with pytest.raises(InputError) as err:
        decode_image('mono8', 4, 4, 4, bytes(17))
    assert err.value.kind == 'image_size'


@pytest.mark.parametrize('width,height,data', [(0, 4, b''), (4, 0, b''), (2, 2, b'')])
def test_empty_images(width, height, data):
    """Zero width, height or data raise image_empty."""
    with pytest.raises(InputError) as err:
        decode_image('mono8', width, height, max(width, 1), data)
    assert err.value.kind == 'image_empty'


def test_jpeg_round_trip_on_a_real_photo():
    """A real photo survives JPEG encode/decode with high PSNR; quality trades size."""
    rgb = load_sample('zidane')
    data = encode_jpeg(rgb, quality=90)
    out = decode_compressed('jpeg', data)
    assert out.shape == rgb.shape
    mse = np.mean((out.astype(np.float64) - rgb) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 32
    assert len(encode_jpeg(rgb, quality=20)) < 0.5 * len(data)
    # The format string of image_transport's compressed plugin decodes alike.
    np.testing.assert_array_equal(decode_compressed('rgb8; jpeg compressed bgr8', data), out)


def test_png_round_trip_is_lossless():
    """PNG (what image_transport uses for lossless) decodes to exactly the input."""
    rgb = _rand_rgb(21, 17, seed=11)
    ok, buf = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(decode_compressed('bgr8; png compressed bgr8', buf.tobytes()),
                                  rgb)


def test_corrupt_truncated_and_empty_compressed_images():
    """Garbage and cut-off JPEGs raise image_corrupt, no bytes image_empty."""
    good = encode_jpeg(_rand_rgb(64, 64, seed=2))
    with pytest.raises(InputError) as err:
        decode_compressed('jpeg', good[:len(good) // 2])
    assert err.value.kind == 'image_corrupt' and 'truncated' in str(err.value)
    with pytest.raises(InputError) as err:
        decode_compressed('jpeg', np.random.default_rng(1).bytes(500))
    assert err.value.kind == 'image_corrupt'
    with pytest.raises(InputError) as err:
        decode_compressed('png', b'\x89PNG\r\n\x1a\n' + bytes(40))
    assert err.value.kind == 'image_corrupt'
    with pytest.raises(InputError) as err:
        decode_compressed('jpeg', b'')
    assert err.value.kind == 'image_empty'
    with pytest.raises(InputError) as err:
        decode_compressed('16UC1; compressedDepth png', good)
    assert err.value.kind == 'image_encoding'


def test_encode_rejects_bad_arrays_and_encodings():
    """The encoders reject non-RGB arrays, unknown encodings, bad quality."""
    with pytest.raises(InputError):
        encode_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError):
        encode_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError) as err:
        encode_image(np.zeros((4, 4, 3), np.uint8), 'yuv422')
    assert err.value.kind == 'image_encoding'
    with pytest.raises(InputError):
        encode_jpeg(np.zeros((4, 4, 3), np.uint8), quality=0)


def test_crop_margin_clipping_and_outside_boxes():
    """Crop widens by the margin, clips to the image, and is empty outside it."""
    rgb = np.arange(10 * 20 * 3, dtype=np.uint32).reshape(10, 20, 3).astype(np.uint8)
    np.testing.assert_array_equal(crop(rgb, (4, 2, 8, 6)), rgb[2:6, 4:8])
    np.testing.assert_array_equal(crop(rgb, (4, 2, 8, 6), margin=0.25), rgb[1:7, 3:9])
    np.testing.assert_array_equal(crop(rgb, (-5, -5, 3, 3)), rgb[0:3, 0:3])
    np.testing.assert_array_equal(crop(rgb, (15.5, 8.2, 40, 40)), rgb[8:10, 15:20])
    assert crop(rgb, (30, 30, 40, 40)).shape == (0, 0, 3)
    out = crop(rgb, (0, 0, 5, 5))
    out[:] = 0
    assert rgb[0, 0, 1] == 1  # a copy, not a view into the frame
    assert clip_box((1, 1, 2, 2), 20, 10) == (1, 1, 2, 2)
    with pytest.raises(InputError) as err:
        crop(rgb, (0, float('nan'), 5, 5))
    assert err.value.kind == 'box'


def test_codec_import_is_ros_free_and_light():
    """Importing image_codec in a fresh interpreter loads neither rclpy nor torch."""
    code = ('import sys, emotion_ros.perception.image_codec, emotion_ros.sample_media\n'
            "bad = [m for m in ('rclpy', 'torch', 'mediapipe') if m in sys.modules]\n"
            'sys.exit(str(bad) if bad else 0)\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
