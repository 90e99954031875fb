"""Learned success detectors: the success signal of a robot without a simulator (`expoft reward`)."""
