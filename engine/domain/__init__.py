"""The pure domain: rules, periods, validation, errors, results and key names. No I/O."""
