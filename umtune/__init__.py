"""umtune: Universal Music Translation networks, trained and swept on Ray."""
