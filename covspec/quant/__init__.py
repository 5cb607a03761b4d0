"""covspec.quant"""
