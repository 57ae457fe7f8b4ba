-- Each user's canonical name (NFKC, lowercased), so that no two users differ only
-- in case or character width. SQLite has no NFKC: the program fills the column in
-- for existing users after this runs. A user whose key an older user already has
-- keeps NULL (NULLs do not collide) and logs in by its exact name only.
ALTER TABLE users ADD COLUMN username_key TEXT;
CREATE UNIQUE INDEX users_username_key ON users (username_key);
