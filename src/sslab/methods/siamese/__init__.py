"""Two views, one gradient form (UniGrad): BYOL, SimSiam, Barlow Twins, VICReg, UniGrad, and their shared two-view step."""
