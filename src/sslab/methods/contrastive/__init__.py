"""Instance discrimination against negatives: NPID, PIRL, MoCo, SimCLR, SupCon."""
