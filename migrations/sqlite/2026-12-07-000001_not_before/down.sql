DROP TABLE not_before;
