// main.cpp - the kiroku executable: parses the command line, starts things.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "app/serve.h"
#include "app/spool_cmd.h"
#include "config/config.h"
#include "load/load.h"

int main(int argc, char** argv) {
  CLI::App app{"kiroku: measurement ingestion and file streaming server"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");

  kiroku::ServeOptions serve_options;
  CLI::App* serve = app.add_subcommand("serve", "run the server");
  serve_options.add_to(*serve);

  kiroku::LoadOptions load_options;
  CLI::App* load = app.add_subcommand("load", "constant-rate HTTP load generator");
  kiroku::add_load_options(*load, load_options);

  // The spool tools read --spool-dir, --sink and --table like serve does
  // (flag > KIROKU_* > --config file > default).
  kiroku::ServeOptions spool_options;
  CLI::App* spool = app.add_subcommand("spool", "check, dump or replay the spool of a stopped server");
  spool->require_subcommand(1);
  spool->fallthrough();
  spool_options.add_to(*spool);
  spool->add_subcommand("check", "verify every segment's checksums; say what is torn or corrupt");
  spool->add_subcommand("dump", "print the spool's events and the dead-letter file as NDJSON");
  spool->add_subcommand("replay", "send the dead-lettered events to the sink again; the stored ones leave the file");

  CLI::App* config_cmd = app.add_subcommand("config", "configuration tools");
  config_cmd->require_subcommand(1);
  config_cmd->add_subcommand("example", "print a commented TOML file with every serve option at its default");

  app.add_subcommand("version", "print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "kiroku: %s\n", e.what());
    return 2;
  }

  if (app.got_subcommand("version")) {
    std::printf("kiroku %s\n", KIROKU_VERSION);
    return 0;
  }
  if (app.got_subcommand("config")) {
    std::fputs(kiroku::example_config().c_str(), stdout);
    return 0;
  }
  if (app.got_subcommand("load")) {
    auto report = kiroku::run_load(load_options, load_options.quiet ? nullptr : &std::cerr);
    if (!report.ok()) {
      std::fprintf(stderr, "kiroku load: %s\n", report.status().message().c_str());
      return 2;
    }
    std::fputs(kiroku::format_report(*report, load_options.json).c_str(), stdout);
    return kiroku::exit_code(*report, load_options);
  }

  kiroku::ServeConfig config;
  kiroku::ConfigError err;
  if (app.got_subcommand("spool")) {
    if (!spool_options.resolve(config, err)) {
      std::fprintf(stderr, "kiroku: %s\n", err.line().c_str());
      return 2;
    }
    return kiroku::run_spool_command(spool->get_subcommands().front()->get_name(), config, stdout, stderr);
  }
  if (!serve_options.resolve(config, err)) {
    std::fprintf(stderr, "kiroku: %s\n", err.line().c_str());
    return 2;
  }
  return kiroku::serve(
      config, [&serve_options](kiroku::ServeConfig& c, kiroku::ConfigError& e) { return serve_options.resolve(c, e); });
}
