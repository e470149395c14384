"""Studies of choosing hyperparameters: label-free measures against the labels."""
