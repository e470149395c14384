"""Studies of the classic pretext tasks: every one on one backbone (pretext_zoo)."""
