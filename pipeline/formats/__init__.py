"""Annotation formats: COCO, CVAT, Label Studio and FiftyOne exports, imports and the fix loop."""
