"""Scoring detections against labels: public corpora (NAB, UCR, SKAB, MIT-BIH) read by path and scored as
their benchmarks define, generated scenarios, and the incident-level metrics shared by all."""
