"""Library functions behind the commands: index jobs, map building, localization and the demo."""
