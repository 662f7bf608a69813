"""The services over Redis and SQL, and the ScoringEngine facade that holds them."""
