"""covspec.export"""
