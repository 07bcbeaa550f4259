-- A push endpoint registered by one user no longer moves to whoever registers it next
-- (issue 22, finding 11): each user's subscriptions are their own rows, so registering
-- someone else's endpoint adds a row of the caller's and leaves the owner's untouched.
ALTER TABLE push_subscriptions DROP CONSTRAINT push_subscriptions_endpoint_key;
ALTER TABLE push_subscriptions
    ADD CONSTRAINT push_subscriptions_user_endpoint UNIQUE (user_id, endpoint);
DROP INDEX push_subscriptions_user;  -- the unique index above leads with user_id
