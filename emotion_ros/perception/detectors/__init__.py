"""Person detectors, one per module; ``detector.type`` picks one (``factory.create_detector``).

``base`` (interface, configuration, box helpers), ``yolo`` (ultralytics),
``face`` (face-anchored, mediapipe's shipped BlazeFace; ``faces`` finds the
faces, also for the light emotion backend), ``hog`` (OpenCV), ``frame`` (the
whole image is one person), ``auto`` (YOLO, else face, saying why).
"""
