"""Training: the shared fit loop, schedules, strategies and training flags."""
