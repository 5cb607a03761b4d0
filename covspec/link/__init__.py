"""covspec.link"""
