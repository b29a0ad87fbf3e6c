"""Multi-step jobs over collections: building them (the demo, interactions, an autoencoder trained on
a folder of images), drawing them (maps) and repairing them (doctor)."""
