"""Reading input files into collections."""
