"""Bounces: the pipe-transport processor and the detectors that read what comes back."""
