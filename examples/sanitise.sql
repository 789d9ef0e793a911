-- Removes personal data from a restored copy of shop (staging.toml, step 2).
-- Runs in one transaction with ON_ERROR_STOP: any error rolls everything back
-- and the chain stops before the backup step.
UPDATE customers
   SET email = 'customer' || id || '@example.invalid',
       name = 'Customer ' || id,
       avatar = NULL,
       profile = NULL;
