"""Pure per-modality preprocessing: arrays in, arrays out. No file writes, no ray/prefect/h5py."""
