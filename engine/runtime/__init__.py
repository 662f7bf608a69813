"""How the engine runs: its settings, the embedded Redis and the testing mode."""
