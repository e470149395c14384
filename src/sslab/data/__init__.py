"""The datasets wing: datasets by name, their sources (folders, archives, Parquet, CIFAR), decoding, the decoded cache and subsets. No Ray: a split becomes a Ray Dataset in ``sslab.engine``."""
