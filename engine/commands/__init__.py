"""The Redis commands: the script registry and one module per Lua command."""
