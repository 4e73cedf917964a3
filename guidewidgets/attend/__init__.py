"""Soft attention (captioning) and spatial transformer networks on ShapeScenes."""
