"""covspec.profile"""
