from toon3d.cli import main

raise SystemExit(main())
