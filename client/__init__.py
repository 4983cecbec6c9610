"""aptfleet device side: the Flower ClientApp and its node-local state."""
