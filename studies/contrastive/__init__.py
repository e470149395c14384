"""Studies of the contrastive methods beyond PIRL: SimCLR's temperature, SupCon against cross-entropy."""
