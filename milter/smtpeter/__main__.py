from smtpeter.cli.main import main

raise SystemExit(main())
