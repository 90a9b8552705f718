"""FGVC experiment workbook library."""
