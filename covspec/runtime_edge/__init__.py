"""covspec.runtime_edge"""
