"""Thumbnails made from the result in memory: size, bit depth, no aliasing, and a real frame's look kept."""

from __future__ import annotations

import cv2
import numpy as np

from watcher.stacking.output import THUMBNAIL_SIDE, encode_image, thumbnail, to_8_bit


def test_a_16_mp_result_becomes_320_px_on_its_longest_side_with_its_aspect_ratio():
    image = np.zeros((3496, 4656, 3), np.uint8)
    assert thumbnail(image).shape == (240, THUMBNAIL_SIDE, 3)
    assert thumbnail(image.transpose(1, 0, 2)).shape == (THUMBNAIL_SIDE, 240, 3)  # portrait stays portrait
    assert thumbnail(np.zeros((6944, 9152), np.uint8)).shape == (243, 320)  # a grey depth map stays grey


def test_a_small_image_is_copied_not_enlarged():
    image = np.full((100, 200, 3), 7, np.uint8)
    small = thumbnail(image)
    assert small.shape == image.shape and not np.shares_memory(small, image)


def test_16_bit_images_give_8_bit_thumbnails_with_rounded_values():
    image = np.array([[0, 257, 65535, 386, 384]], np.uint16)
    assert to_8_bit(image).tolist() == [[0, 1, 255, 2, 1]]
    assert thumbnail(np.full((1000, 1000, 3), 65535, np.uint16)).dtype == np.uint8
    assert thumbnail(np.full((1000, 1000, 3), 65535, np.uint16)).min() == 255


def test_fine_texture_averages_to_grey_instead_of_aliasing():
    # 1-px black and white stripes: a nearest-neighbour shrink shows solid black or white, or moire. Each
    # thumbnail pixel covers 7.5 stripes, so its value is 4/7.5 or 3.5/7.5 white: 119..136.
    stripes = np.zeros((1600, 2400), np.uint8)
    stripes[:, ::2] = 255
    small = thumbnail(stripes)
    assert small.shape == (213, 320) and small.min() >= 115 and small.max() <= 140


def test_a_real_frame_keeps_its_look_and_encodes_small(pcb_stack):
    frame = cv2.imread(str(pcb_stack[0]), cv2.IMREAD_COLOR)
    small = thumbnail(frame)
    assert small.shape == (240, 320, 3)
    reference = cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)
    assert cv2.PSNR(small, reference) > 40
    data, warnings = encode_image(small, "jpg", jpeg_quality=85)
    assert warnings == [] and len(data) < 60_000  # about 20-40 kB: thousands fit on a Pi's SD card
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
