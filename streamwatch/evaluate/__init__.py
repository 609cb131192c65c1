"""Scoring detections against labels."""
