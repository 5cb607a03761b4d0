"""covspec.runtime_device"""
