"""Runnable study scripts: `python studies/<name>.py` for PIRL's (the main paper's), and
`python studies/<family>/<name>.py` for the other families (contrastive/, siamese/, pretext/,
selection/), as the methods are grouped. `sslab run <name>` finds a study by its name alone."""
