"""Occupancy networks: one model class (`network`) built from parts (`parts`): an input encoding,
a residual decoder, and, for several shapes, a code table or a point encoder."""
