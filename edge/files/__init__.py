"""The appliance's files outside the database: run images (`images`), the intake spool of
accepted but unfinished plates (`spool`), the LabWare CSVs in the share (`share`), and the
atomic, fsynced writes they all use (`fsutil`)."""
