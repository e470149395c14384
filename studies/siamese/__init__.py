"""Studies of the Siamese family under UniGrad's lens: the family side by side, the momentum encoder, UniGrad's λ and ρ."""
