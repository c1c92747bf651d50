"""smtpeter: the SMTPeter SMTP API for Postfix."""

__version__ = "0.1.0"
