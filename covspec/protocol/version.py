"""Protocol version: bumped on any change a peer of the previous version would misread."""

PROTOCOL_VERSION = 2  # 2: one connection per device (hello/open/opened/resume/cancel), bursts, verify time
