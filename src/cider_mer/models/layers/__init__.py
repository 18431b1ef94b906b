"""Building blocks of the CIDer model: WSAM, MCT/MCA, pooling, positions."""
