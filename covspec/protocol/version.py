"""Protocol version: bumped on any change a peer of the previous version would misread."""

PROTOCOL_VERSION = 1
