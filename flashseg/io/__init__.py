"""File formats: tracks (HDF5), FASTA, BED/bedGraph outputs, models (YAML), reads (BAM)."""
