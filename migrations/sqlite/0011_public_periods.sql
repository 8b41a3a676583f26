-- Each time a namespace turns public it starts a new public period; bearer tokens whose pull
-- comes only from publicness name the period's key (`store::public_key`), which turning the
-- namespace private revokes.
ALTER TABLE namespaces ADD COLUMN public_gen INTEGER NOT NULL DEFAULT 0;
