"""Training data from meshes: loading and unit-cube normalisation (`meshes`), inside/outside labels
that survive holes (`labels`), surface / near-surface / uniform points (`sampling`), the dataset
folder and its caches (`folder`), the datasets (`dataset`, `shapenet`, `synthetic`)."""
