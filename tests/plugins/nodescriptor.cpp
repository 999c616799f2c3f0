extern "C" int not_a_cnf_plugin() { return 42; }
