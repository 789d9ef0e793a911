-- The parallel-restore benchmark's PostgreSQL database (scripts/bench.sh, target `parallel`):
-- several tables with secondary indexes and foreign keys, and a partitioned table.
-- psql -v mb=N: about 1.2 × N MB with indexes (orders, order_items and the four partitions of
-- events about 30 % each, each of them over 100 MB from N = 350).
\set customers (:mb * 550)
\set products 20000
\set orders (:mb * 1800)
\set events (:mb * 1500)

CREATE TABLE customers (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  country char(2) NOT NULL,
  created timestamptz NOT NULL
);
CREATE TABLE products (
  id int PRIMARY KEY,
  sku text NOT NULL UNIQUE,
  title text NOT NULL,
  price numeric(10, 2) NOT NULL
);
CREATE TABLE orders (
  id bigint PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers,
  placed timestamptz NOT NULL,
  status text NOT NULL,
  note text
);
CREATE TABLE order_items (
  order_id bigint NOT NULL REFERENCES orders,
  line int NOT NULL,
  product_id int NOT NULL REFERENCES products,
  qty int NOT NULL,
  price numeric(10, 2) NOT NULL,
  PRIMARY KEY (order_id, line)
);
CREATE TABLE events (
  id bigint NOT NULL,
  at timestamptz NOT NULL,
  customer_id bigint NOT NULL REFERENCES customers,
  kind text NOT NULL,
  payload text NOT NULL,
  PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE events_q1 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-04-01');
CREATE TABLE events_q2 PARTITION OF events FOR VALUES FROM ('2026-04-01') TO ('2026-07-01');
CREATE TABLE events_q3 PARTITION OF events FOR VALUES FROM ('2026-07-01') TO ('2026-10-01');
CREATE TABLE events_q4 PARTITION OF events FOR VALUES FROM ('2026-10-01') TO ('2027-01-01');

INSERT INTO customers
  SELECT i, 'customer ' || i, 'c' || i || '@example.test', chr(65 + i % 26) || chr(65 + i % 7),
         '2020-01-01'::timestamptz + i * interval '7 seconds'
  FROM generate_series(1, :customers) i;
INSERT INTO products
  SELECT i, 'SKU-' || lpad(i::text, 8, '0'), 'product ' || md5(i::text), (i % 5000) / 10.0 + 1
  FROM generate_series(1, :products) i;
INSERT INTO orders
  SELECT i, 1 + i % :customers, '2025-01-01'::timestamptz + i * interval '3 seconds',
         (ARRAY['new', 'paid', 'shipped', 'done'])[1 + i % 4], md5(i::text) || md5((i + 1)::text)
  FROM generate_series(1, :orders) i;
INSERT INTO order_items
  SELECT o, l, 1 + (o * 7 + l) % :products, 1 + o % 5, ((o + l) % 10000) / 10.0
  FROM generate_series(1, :orders) o, generate_series(1, 2) l;
INSERT INTO events
  SELECT i, '2026-01-01'::timestamptz + ((i - 1)::bigint * 31536000 / :events) * interval '1 second', 1 + i % :customers,
         'kind-' || i % 17, repeat(md5(i::text), 2)
  FROM generate_series(1, :events) i;

CREATE INDEX customers_email ON customers (email);
CREATE INDEX customers_country_created ON customers (country, created);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_placed ON orders (placed);
CREATE INDEX order_items_product ON order_items (product_id);
CREATE INDEX events_customer ON events (customer_id);
CREATE INDEX events_kind_at ON events (kind, at);
ANALYZE;
