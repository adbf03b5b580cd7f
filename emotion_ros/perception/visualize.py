"""Annotated images for operators and reports (ROS-free)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from emotion_ros.llm.contract import CATEGORIES
from emotion_ros.types import PersonEstimate


def draw_persons(rgb: np.ndarray, persons: Sequence[PersonEstimate], top_k: int = 3) -> np.ndarray:
    """Draw each person's box, track id, top categories and VAD on a copy of ``rgb``."""
    import cv2  # local: only needed when annotating

    out = np.ascontiguousarray(rgb.copy())
    scale = max(out.shape[:2]) / 800.0
    thickness = max(1, int(round(2 * scale)))
    font = 0.45 * max(scale, 0.6)
    for person in persons:
        x1, y1, x2, y2 = (int(round(v)) for v in person.box)
        emotion = person.emotion
        distress = max(emotion.scores[CATEGORIES.index(c)] for c in ('Fear', 'Pain', 'Suffering'))
        color = (255, int(200 * (1 - distress)), 0) if emotion.face_visible else (160, 160, 160)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        lines = [f'#{person.track_id} ({person.detection_confidence:.2f})']
        if emotion.face_visible:
            order = np.argsort(-emotion.scores)[:top_k]
            lines += [f'{CATEGORIES[i]} {emotion.scores[i]:.2f}' for i in order]
            v, a, d = emotion.vad
            if not math.isnan(v):
                lines.append(f'V{v:.1f} A{a:.1f} D{d:.1f}')
        else:
            lines.append('no face')
        line_h = int(16 * max(scale, 0.6))
        # Labels sit above the box, or inside its top when there is no room above.
        top = y1 - 4 - line_h * (len(lines) - 1)
        if top < line_h:
            top = y1 + line_h
        for i, text in enumerate(lines):
            pos = (x1 + 2, top + i * line_h)
            cv2.putText(out, text, pos, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0),
                        thickness + 2, cv2.LINE_AA)
            cv2.putText(out, text, pos, cv2.FONT_HERSHEY_SIMPLEX, font, color, thickness,
                        cv2.LINE_AA)
    return out
