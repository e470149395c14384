"""The datasets wing: datasets by name, their sources, decoding, the decoded cache and subsets. No Ray: a split becomes a Ray Dataset in ``sslab.engine.augment.to_ray_dataset``.

Import each name from the module that defines it:

- ``sslab.data.catalog``: dataset names → sources; ``load_split``, ``train_normalization``, ``DatasetNotFoundError``
- ``sslab.data.train_test``: ``load_train_test`` (the two splits a run uses, checked) and ``evaluation_arrays``
- ``sslab.data.split``: ``Split`` (a decoded split and its ``identity()``), ``take_subset``
- ``sslab.data.locations``: ``data_dir`` and ``cache_dir``
- ``sslab.data.sources``: the readers (CIFAR archives, ImageFolder trees, torchvision's pickles, Parquet)
- ``sslab.data.decode``: images to uint8 RGB arrays, resizing and centre-cropping
- ``sslab.data.cache``: the decoded-image Parquet cache (``CACHE_VERSION``)
"""
